//! The route table and the handlers: each turns an HTTP request into calls on the rooms below
//! and their result into a response. One file per resource as the API grows.

use crate::error::Error;
use crate::http::{self, Match, Params, Request, Response, Router};

type HandlerFn = fn(&App, &Request, &Params) -> Result<Response, Error>;

/// Everything a handler may reach, shared by every worker thread.
pub struct App {
    router: Router<HandlerFn>,
}

impl App {
    pub fn new() -> App {
        let mut router: Router<HandlerFn> = Router::new();
        router.add("GET", "/healthz", healthz);
        App { router }
    }
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl http::Handler for App {
    fn body_limit(&self, req: &Request) -> Option<usize> {
        match self.router.find(&req.method, &req.path) {
            Match::Found(route, _) => route.body_limit,
            _ => None,
        }
    }

    fn handle(&self, req: &Request) -> Response {
        let result = match self.router.find(&req.method, &req.path) {
            Match::Found(route, params) => (route.handler)(self, req, &params),
            Match::MethodNotAllowed(allow) => Err(Error::MethodNotAllowed { allow }),
            Match::NotFound => Err(Error::NotFound),
        };
        result.unwrap_or_else(Error::into_response)
    }
}

fn healthz(_app: &App, _req: &Request, _params: &Params) -> Result<Response, Error> {
    Ok(Response::json(200, &serde_json::json!({"status": "ok"})))
}
