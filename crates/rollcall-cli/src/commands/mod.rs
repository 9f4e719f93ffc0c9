//! The subcommands of `rollcall`, one module each (its clap arguments and its
//! `run`), and the helpers they share.

pub mod bench;
pub mod info;
pub mod sample;
pub mod tail;
pub mod vote;

use clap::ValueEnum;

/// A value's name as typed on the command line.
pub fn cli_name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}
