//! The regular expressions of docker's `name` filters (`docker ps --filter
//! name=^/condor-[0-9]+$`), which dockerd matches with Go's regexp against the
//! container's name with its leading slash, anywhere in it unless anchored.
//!
//! The subset scripts use is enough: literals, `.`, `^`, `$`, `*`, `+`, `?`,
//! bracket classes with ranges and negation, `\d`, `\w`, `\s` and escaped
//! punctuation. Groups, alternation and counted repetition are refused with a
//! clear error instead of being matched as something they are not. Matching
//! backtracks over a handful of pieces against a name of a few dozen
//! characters: no blow-up worth an automaton.

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Any,
    Char(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Rep {
    One,
    Star,
    Plus,
    Opt,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    anchored_start: bool,
    anchored_end: bool,
    pieces: Vec<(Atom, Rep)>,
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
const SPACE: &[(char, char)] = &[(' ', ' '), ('\t', '\r')];

impl Pattern {
    pub fn parse(p: &str) -> Result<Pattern, String> {
        let refuse = |what: &str| {
            Err(format!(
                "the pattern {p:?} uses {what}, which berth's filters do not support (use ^ $ . * + ? [...] \\d \\w)"
            ))
        };
        let mut chars: Vec<char> = p.chars().collect();
        let anchored_start = chars.first() == Some(&'^');
        if anchored_start {
            chars.remove(0);
        }
        // A final unescaped '$' anchors the end.
        let escaped_end = chars.len() >= 2 && chars[chars.len() - 2] == '\\';
        let anchored_end = chars.last() == Some(&'$') && !escaped_end;
        if anchored_end {
            chars.pop();
        }
        let mut pieces: Vec<(Atom, Rep)> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            let atom = match c {
                '.' => Atom::Any,
                '\\' => {
                    let Some(&e) = chars.get(i) else {
                        return refuse("a trailing backslash");
                    };
                    i += 1;
                    escape(e)
                }
                '[' => {
                    let negated = chars.get(i) == Some(&'^');
                    if negated {
                        i += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut first = true;
                    loop {
                        let Some(&c) = chars.get(i) else {
                            return refuse("an unclosed [");
                        };
                        i += 1;
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        let lo = if c == '\\' {
                            let Some(&e) = chars.get(i) else {
                                return refuse("a trailing backslash");
                            };
                            i += 1;
                            match escape(e) {
                                Atom::Class { ranges: r, .. } => {
                                    ranges.extend(r);
                                    continue;
                                }
                                Atom::Char(c) => c,
                                Atom::Any => e,
                            }
                        } else {
                            c
                        };
                        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&h| h != ']')
                        {
                            let hi = chars[i + 1];
                            i += 2;
                            if hi < lo {
                                return refuse("a backwards range");
                            }
                            ranges.push((lo, hi));
                        } else {
                            ranges.push((lo, lo));
                        }
                    }
                    Atom::Class { negated, ranges }
                }
                '(' | ')' | '|' => return refuse("groups or alternation"),
                '{' => return refuse("counted repetition"),
                '*' | '+' | '?' => return refuse("a repetition of nothing"),
                '^' | '$' => return refuse("an anchor inside the pattern"),
                c => Atom::Char(c),
            };
            let rep = match chars.get(i) {
                Some('*') => Rep::Star,
                Some('+') => Rep::Plus,
                Some('?') => Rep::Opt,
                _ => Rep::One,
            };
            if rep != Rep::One {
                i += 1;
                if matches!(chars.get(i), Some('*' | '+' | '?')) {
                    return refuse("a lazy or doubled repetition");
                }
            }
            pieces.push((atom, rep));
        }
        Ok(Pattern {
            anchored_start,
            anchored_end,
            pieces,
        })
    }

    /// Go's `regexp.MatchString`: somewhere in `s` unless anchored.
    pub fn is_match(&self, s: &str) -> bool {
        let s: Vec<char> = s.chars().collect();
        if self.anchored_start {
            return self.at(0, &s, 0);
        }
        (0..=s.len()).any(|start| self.at(0, &s, start))
    }

    fn at(&self, k: usize, s: &[char], j: usize) -> bool {
        let Some((atom, rep)) = self.pieces.get(k) else {
            return !self.anchored_end || j == s.len();
        };
        let one = |j: usize| s.get(j).is_some_and(|&c| matches(atom, c));
        match rep {
            Rep::One => one(j) && self.at(k + 1, s, j + 1),
            Rep::Opt => (one(j) && self.at(k + 1, s, j + 1)) || self.at(k + 1, s, j),
            Rep::Star | Rep::Plus => {
                let mut n = 0;
                while one(j + n) {
                    n += 1;
                }
                let least = usize::from(*rep == Rep::Plus);
                (least..=n).rev().any(|m| self.at(k + 1, s, j + m))
            }
        }
    }
}

fn escape(e: char) -> Atom {
    match e {
        'd' => Atom::Class {
            negated: false,
            ranges: DIGIT.to_vec(),
        },
        'w' => Atom::Class {
            negated: false,
            ranges: WORD.to_vec(),
        },
        's' => Atom::Class {
            negated: false,
            ranges: SPACE.to_vec(),
        },
        'D' | 'W' | 'S' => {
            let Atom::Class { ranges, .. } = escape(e.to_ascii_lowercase()) else {
                unreachable!("escape of a lowercase class letter is a class")
            };
            Atom::Class {
                negated: true,
                ranges,
            }
        }
        c => Atom::Char(c),
    }
}

fn matches(atom: &Atom, c: char) -> bool {
    match atom {
        Atom::Any => c != '\n',
        Atom::Char(x) => *x == c,
        Atom::Class { negated, ranges } => {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Pattern::parse(p).unwrap().is_match(s)
    }

    #[test]
    fn unanchored_patterns_match_anywhere_as_go_does() {
        assert!(m("w1", "/w1"));
        assert!(m("1", "/done1"));
        assert!(m("", "/x"));
        assert!(!m("w2", "/w1"));
        assert!(m("con.or", "/condor"));
    }

    #[test]
    fn anchors_see_the_leading_slash() {
        assert!(m("^/w", "/w1"));
        assert!(!m("^w", "/w1"));
        assert!(m("^/condor$", "/condor"));
        assert!(!m("^/condor$", "/condor2"));
        assert!(m("1$", "/new1"));
        assert!(m("a\\$", "/a$"));
        assert!(!m("a\\$", "/a"));
    }

    #[test]
    fn repetitions_and_classes() {
        assert!(m("^/wn-[0-9]+$", "/wn-42"));
        assert!(!m("^/wn-[0-9]+$", "/wn-"));
        assert!(m("^/wn-\\d*$", "/wn-"));
        assert!(m("^/a.*z$", "/abcz"));
        assert!(m("^/colou?r$", "/color"));
        assert!(m("^/colou?r$", "/colour"));
        assert!(m("^/[^0-9]+$", "/abc"));
        assert!(!m("^/[^0-9]+$", "/a1"));
        assert!(m("^/[a-c-]+$", "/a-b"));
        assert!(m("^/[]x]$", "/]"));
        assert!(m("^/\\w+\\.\\w+$", "/sl6.worker"));
        assert!(m("^/a+a+a+b$", "/aaab"));
        assert!(!m("^/a*a*a*a*c$", "/aaaaaaaaaaaaaaaaaaaab"));
    }

    #[test]
    fn unsupported_syntax_is_refused_with_the_reason() {
        for p in ["(a|b)", "a{2}", "*a", "a**", "[a", "a\\", "x^y"] {
            let e = Pattern::parse(p).unwrap_err();
            assert!(e.contains("do not support"), "{p}: {e}");
        }
    }
}
