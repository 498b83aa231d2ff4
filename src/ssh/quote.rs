//! Remote-shell quoting, in exactly one place. Nothing else in certctl writes quotes.

/// Quotes one argument for a POSIX shell.
pub fn quote(arg: &str) -> String {
    todo!("{arg}")
}

/// Quotes an argv into one command line for a POSIX shell.
pub fn command_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter().map(|a| quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

/// A POSIX shell script assembled from quoted commands; raw shell syntax only comes from the
/// fixed operators this type offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    text: String,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a command line of quoted `argv`, then a newline.
    pub fn cmd<S: AsRef<str>>(&mut self, argv: &[S]) -> &mut Self {
        todo!("{}", argv.len())
    }
    /// Appends fixed shell text (functions, operators). Only `'static` text is accepted, so
    /// no runtime value can reach the script without passing through [`quote`].
    pub fn raw(&mut self, text: &'static str) -> &mut Self {
        self.text.push_str(text);
        self
    }
    /// The script text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}
