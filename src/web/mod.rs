//! The Mesh Panel and the HTTP API.
