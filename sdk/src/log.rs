//! Logging into the host's `tracing`, tagged with the plugin's name.

use crate::bindings::operator::subject::log::{Level, log};

pub fn trace(msg: impl AsRef<str>) {
    log(Level::Trace, msg.as_ref());
}
pub fn debug(msg: impl AsRef<str>) {
    log(Level::Debug, msg.as_ref());
}
pub fn info(msg: impl AsRef<str>) {
    log(Level::Info, msg.as_ref());
}
pub fn warn(msg: impl AsRef<str>) {
    log(Level::Warn, msg.as_ref());
}
pub fn error(msg: impl AsRef<str>) {
    log(Level::Error, msg.as_ref());
}
