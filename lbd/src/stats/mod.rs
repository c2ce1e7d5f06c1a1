//! The stats page (in progress).
