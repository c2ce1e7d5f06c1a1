//! Installer (in progress).
