//! Checks of an order's fields as a reader typed them (customer contacts, amount, currency,
//! notes, assignee), and the currencies an order may be in. Problems are collected, not
//! returned one at a time, so a reply names every bad field.

use super::orders::{MAX_AMOUNT_MINOR, MAX_NOTES_CHARS, MAX_PHONE_CHARS};
use super::Problems;
use crate::catalog::{check_email, EmailRule};

/// Checked values of the full-view fields.
fn optional_text(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// A customer is written to: the stricter rule, which refuses a domain without a dot.
pub(super) fn check_customer_email(problems: &mut Problems, email: Option<&str>) -> Option<String> {
    let email = optional_text(email)?;
    if check_email(&email, EmailRule::Mailbox).is_err() {
        problems.add("customer_email", "not an email address");
    }
    Some(email)
}

pub(super) fn check_phone(problems: &mut Problems, phone: Option<&str>) -> Option<String> {
    let phone = optional_text(phone)?;
    if !valid_phone(&phone) {
        problems.add(
            "customer_phone",
            "4 to 20 digits, with optional leading +, spaces, dots, dashes and parentheses",
        );
    }
    Some(phone)
}

pub fn valid_phone(phone: &str) -> bool {
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    phone.len() <= MAX_PHONE_CHARS
        && (4..=20).contains(&digits)
        && phone.char_indices().all(|(i, c)| {
            c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')') || (c == '+' && i == 0)
        })
}

pub(super) fn check_amount(problems: &mut Problems, amount: i64) {
    if amount < 0 {
        problems.add("amount_minor", "must not be negative");
    } else if amount > MAX_AMOUNT_MINOR {
        problems.add(
            "amount_minor",
            format!("must be at most {MAX_AMOUNT_MINOR}"),
        );
    }
}

/// What an order gets when neither the request nor the tenant's settings name a currency.
pub const DEFAULT_CURRENCY: &str = "EUR";

pub(super) fn check_currency(problems: &mut Problems, currency: &str) {
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        problems.add(
            "currency",
            "must be three upper-case letters (ISO 4217, e.g. EUR)",
        );
    } else if CURRENCIES.binary_search(&currency).is_err() {
        problems.add("currency", "unknown ISO 4217 currency code");
    }
}

pub(super) fn check_notes(problems: &mut Problems, notes: &str) {
    if !problems.control_characters("notes", notes, true) {
        // Reported.
    } else if notes.chars().count() > MAX_NOTES_CHARS {
        problems.add(
            "notes",
            format!("must be at most {MAX_NOTES_CHARS} characters"),
        );
    }
}

pub(super) fn check_assignee(problems: &mut Problems, assignee: Option<i64>, member: bool) {
    if assignee.is_some() && !member {
        problems.add("assigned_to", "not a member of this tenant");
    }
}

/// Active ISO 4217 codes of money one can invoice in (no precious metals,
/// bond units, SDR, or the test and "no currency" codes), sorted for binary
/// search.
pub const CURRENCIES: [&str; 169] = [
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD",
    "CAD", "CDF", "CHE", "CHF", "CHW", "CLF", "CLP", "CNY", "COP", "COU", "CRC", "CUC", "CUP",
    "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP",
    "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS",
    "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW",
    "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD",
    "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN",
    "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR",
    "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL",
    "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "USN", "UYI", "UYU", "UYW", "UZS", "VED", "VES",
    "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
];
