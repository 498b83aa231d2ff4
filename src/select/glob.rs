//! The shell-style globs a `--limit` term may use, matched against whole names without
//! backtracking blow-up.

/// A shell-style glob over a whole name: `*` any run of characters (also empty), `?` one
/// character, `[abc]` / `[a-z]` one of a set, `[!abc]` / `[^abc]` one not in it.
#[derive(Debug)]
pub(crate) struct Glob {
    pub(super) source: String,
    tokens: Vec<Token>,
}

#[derive(Debug)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let chars: Vec<char> = s.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    // `**` means the same as `*`; collapsing keeps matching linear.
                    if !matches!(tokens.last(), Some(Token::AnyRun)) {
                        tokens.push(Token::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '[' => {
                    let (token, next) = parse_class(&chars, i)?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Self {
            source: s.to_owned(),
            tokens,
        })
    }

    /// Whether the whole of `name` matches. Every token but `*` consumes exactly one
    /// character, so backtracking to the last `*` alone is complete: O(len(name) × tokens)
    /// at worst, linear in practice.
    pub(crate) fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let (mut p, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match self.tokens.get(p) {
                Some(Token::AnyRun) => {
                    star = Some((p, n));
                    p += 1;
                }
                Some(t) if t.matches_one(name[n]) => {
                    p += 1;
                    n += 1;
                }
                _ => match star {
                    Some((sp, sn)) => {
                        p = sp + 1;
                        n = sn + 1;
                        star = Some((sp, sn + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| matches!(t, Token::AnyRun))
    }
}

impl Token {
    fn matches_one(&self, c: char) -> bool {
        match self {
            Token::Literal(l) => *l == c,
            Token::AnyOne => true,
            Token::AnyRun => false,
            Token::Class { negated, ranges } => {
                ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated
            }
        }
    }
}

/// Parses `[...]` starting at `chars[start] == '['`; returns the token and the index after `]`.
fn parse_class(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("`[` is never closed with `]`".into());
        };
        // A `]` right after `[` or `[!` is a literal, as in the shell.
        if c == ']' && !first {
            break;
        }
        first = false;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&e| e != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(format!("range `{c}-{end}` is reversed"));
            }
            ranges.push((c, end));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
    Ok((Token::Class { negated, ranges }, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> Glob {
        Glob::parse(p).unwrap()
    }

    #[test]
    fn glob_star_and_question() {
        assert!(glob("web-*").matches("web-01"));
        assert!(glob("web-*").matches("web-"));
        assert!(!glob("web-*").matches("web"));
        assert!(!glob("web-*").matches("xweb-01"));
        assert!(glob("*-01").matches("web-01"));
        assert!(glob("*").matches(""));
        assert!(glob("db-?").matches("db-1"));
        assert!(!glob("db-?").matches("db-10"));
        assert!(!glob("db-?").matches("db-"));
        assert!(glob("a*b*c").matches("aXXbYYbZc"));
        assert!(!glob("a*b*c").matches("aXXbYYbZ"));
        assert!(glob("**x**").matches("abxcd"));
        assert!(glob("é?").matches("éü"), "characters, not bytes");
    }

    #[test]
    fn glob_classes() {
        assert!(glob("[ab]*").matches("alpha"));
        assert!(glob("[ab]*").matches("beta"));
        assert!(!glob("[ab]*").matches("gamma"));
        assert!(glob("web-[0-4]").matches("web-3"));
        assert!(!glob("web-[0-4]").matches("web-5"));
        assert!(glob("[!x]*").matches("web"));
        assert!(!glob("[!x]*").matches("xweb"));
        assert!(glob("[^x]*").matches("web"));
        assert!(glob("[]]").matches("]"));
        assert!(glob("[a-]").matches("-"));
        assert!(glob("[a-]").matches("a"));
    }

    #[test]
    fn glob_errors() {
        assert!(Glob::parse("web-[12").unwrap_err().contains("never closed"));
        assert!(Glob::parse("[z-a]").unwrap_err().contains("reversed"));
    }

    #[test]
    fn glob_worst_case_is_not_exponential() {
        // Classic backtracking blow-up input for naive recursive matchers.
        let g = glob("a*a*a*a*a*a*a*a*a*b");
        assert!(!g.matches(&"a".repeat(200)));
    }
}
