//! `warren-jailer`: reads a JailSpec on stdin, builds the jail, execs the agent.

fn main() {}
