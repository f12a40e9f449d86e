//! The HTTP/1.1 layer: accepting, limits and timeouts, parsing and framing, request bodies
//! (buffered, or streamed to their handler), responses (whole, streamed, from a file, or
//! upgraded), and the route table. It knows nothing of tenants or users.
//!
//! Our own, on the `httparse` parser, because no synchronous server crate we measured combined
//! socket timeouts, strict framing, bounded header sizes, WebSocket takeover and streamed
//! responses (see the README).

mod body_stream;
mod parse;
mod request;
mod response;
mod router;
mod server;

pub use body_stream::{body_error, BodyStream};
pub use parse::{HeadLimits, Reject};
pub use request::{log_safe, media_type, Header, Request, Version};
pub use response::{error_body, reason, Body, ConnSlot, Response, StreamFn, UpgradeFn, Upgraded};
pub use router::{BodyLimit, Match, Params, Route, Router};
pub use server::{serve, Config, Handler, ServerHandle, Stopper, ACCESS_LOG};
