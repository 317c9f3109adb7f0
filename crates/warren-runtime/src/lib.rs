//! Sandbox drivers and storage.
