fn main() {
    std::process::exit(tenantd::cli::run(std::env::args().skip(1).collect()));
}
