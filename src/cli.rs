//! Command-line interface (placeholder while the skeleton is built).

pub fn run() -> u8 {
    0
}
