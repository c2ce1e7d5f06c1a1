//! lbctl: the operator CLI.

pub mod install;
