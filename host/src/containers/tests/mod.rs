//! The containers module's tests, by concern.

mod paths;
mod resolver;
