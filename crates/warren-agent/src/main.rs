//! `warren-agent`: PID 1 inside every sandbox.

fn main() {}
