//! The tables a schema statement changes, read from the statement's head, for `spare log
//! --table`: `CREATE TABLE invoice (..., customer TEXT)` changes `invoice`, not `customer`.
//!
//! A small lexer (comments skipped, quoted identifiers read with their escapes) and the heads
//! SQLite's schema statements have. What it cannot read returns None, and the caller falls
//! back to a plain search of the text: listing a statement too many is better than missing one.

/// A token of the statement's head.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare word (keyword or name).
    Word(String),
    /// A quoted identifier ("a b", [a b], `a b`, 'a b'), unescaped.
    Quoted(String),
    /// Any other character: `.`, `(`, `,`, `;`...
    Punct(char),
}

/// Reads at most this many tokens: a head is short.
const MAX_HEAD_TOKENS: usize = 64;

fn tokens(sql: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if out.len() >= MAX_HEAD_TOKENS {
            break;
        }
        match c {
            c if c.is_ascii_whitespace() => {
                chars.next();
            }
            '-' if sql_comment_starts(&mut chars.clone(), '-') => {
                chars.by_ref().take_while(|&c| c != '\n').for_each(drop);
            }
            '/' if sql_comment_starts(&mut chars.clone(), '*') => {
                chars.next();
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' | '`' | '\'' | '[' => {
                chars.next();
                let close = if c == '[' { ']' } else { c };
                let mut name = String::new();
                while let Some(c) = chars.next() {
                    if c == close {
                        // A doubled quote is one quote in the name ("a""b" is a"b).
                        if close != ']' && chars.peek() == Some(&close) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    name.push(c);
                }
                out.push(Token::Quoted(name));
            }
            c if is_word_char(c) => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
            c => {
                chars.next();
                out.push(Token::Punct(c));
            }
        }
    }
    out
}

/// As SQLite reads identifiers: letters, digits, `_`, `$`, and every non-ASCII character.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

fn sql_comment_starts(chars: &mut std::iter::Peekable<std::str::Chars>, second: char) -> bool {
    chars.next();
    chars.peek() == Some(&second)
}

/// A cursor over the head's tokens.
struct Head {
    tokens: Vec<Token>,
    at: usize,
}

impl Head {
    /// The next token if it is the keyword `word` (any case), consumed.
    fn keyword(&mut self, word: &str) -> bool {
        let is = matches!(self.tokens.get(self.at), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word));
        self.at += usize::from(is);
        is
    }

    /// Consumes the first keyword of `words` found next, returning it.
    fn one_of(&mut self, words: &[&'static str]) -> Option<&'static str> {
        words.iter().copied().find(|w| self.keyword(w))
    }

    /// `IF [NOT] EXISTS`, if there.
    fn if_exists(&mut self) {
        if self.keyword("IF") {
            self.keyword("NOT");
            self.keyword("EXISTS");
        }
    }

    /// A name, schema-qualified or not (`main.customer` is `customer`).
    fn name(&mut self) -> Option<String> {
        let mut name = self.ident()?;
        while self.tokens.get(self.at) == Some(&Token::Punct('.')) {
            self.at += 1;
            name = self.ident()?;
        }
        Some(name)
    }

    fn ident(&mut self) -> Option<String> {
        let name = match self.tokens.get(self.at)? {
            Token::Word(w) | Token::Quoted(w) => w.clone(),
            Token::Punct(_) => return None,
        };
        self.at += 1;
        Some(name)
    }

    /// Skips to just past the keyword `word`.
    fn past(&mut self, word: &str) -> bool {
        while self.at < self.tokens.len() {
            if self.keyword(word) {
                return true;
            }
            self.at += 1;
        }
        false
    }
}

/// The tables (and views) the schema statement `sql` changes; empty for one that changes
/// none of them (`DROP INDEX`); None when its head cannot be read.
pub fn changed_tables(sql: &str) -> Option<Vec<String>> {
    let mut h = Head {
        tokens: tokens(sql),
        at: 0,
    };
    if h.keyword("CREATE") {
        h.one_of(&["TEMP", "TEMPORARY"]);
        h.one_of(&["UNIQUE", "VIRTUAL"]);
        let kind = h.one_of(&["TABLE", "VIEW", "INDEX", "TRIGGER"])?;
        h.if_exists();
        let name = h.name()?;
        return match kind {
            "TABLE" | "VIEW" => Some(vec![name]),
            // An index or a trigger belongs to the table after its first ON.
            _ => h.past("ON").then(|| h.name()).flatten().map(|t| vec![t]),
        };
    }
    if h.keyword("ALTER") {
        h.keyword("TABLE").then_some(())?;
        let name = h.name()?;
        if h.keyword("RENAME") && h.keyword("TO") {
            return Some(vec![name, h.name()?]);
        }
        return Some(vec![name]);
    }
    if h.keyword("DROP") {
        let kind = h.one_of(&["TABLE", "VIEW", "INDEX", "TRIGGER"])?;
        h.if_exists();
        let name = h.name()?;
        return Some(if matches!(kind, "TABLE" | "VIEW") {
            vec![name]
        } else {
            Vec::new()
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::changed_tables;

    #[test]
    fn a_schema_statement_names_the_tables_it_changes_not_its_columns() {
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("CREATE TABLE invoice (id INTEGER PRIMARY KEY, customer TEXT)", Some(&["invoice"])),
            ("CREATE TABLE IF NOT EXISTS \"customer\"(id INTEGER)", Some(&["customer"])),
            ("create temp table t(x)", Some(&["t"])),
            ("CREATE TABLE prix€ (a)", Some(&["prix€"])),
            ("CREATE TABLE café_x😀\u{a0}(a)", Some(&["café_x😀\u{a0}"])),
            ("CREATE TABLE\"my table\"(x)", Some(&["my table"])),
            ("CREATE TABLE [my table] (x)", Some(&["my table"])),
            ("CREATE TABLE \"a\"\"b\" (x)", Some(&["a\"b"])),
            ("CREATE TABLE \"x.y\" (x)", Some(&["x.y"])),
            ("-- the orders table\nCREATE TABLE orders (x)", Some(&["orders"])),
            ("/* on name */ CREATE INDEX i ON customer(name)", Some(&["customer"])),
            ("CREATE UNIQUE INDEX IF NOT EXISTS by_name ON \"my table\" (name)", Some(&["my table"])),
            ("ALTER TABLE main.customer ADD COLUMN city TEXT", Some(&["customer"])),
            ("ALTER TABLE x RENAME TO y", Some(&["x", "y"])),
            ("ALTER TABLE x RENAME COLUMN a TO b", Some(&["x"])),
            ("DROP TABLE IF EXISTS [customer];", Some(&["customer"])),
            ("CREATE VIEW big AS SELECT * FROM customer", Some(&["big"])),
            (
                "CREATE TRIGGER t AFTER UPDATE OF view ON invoice BEGIN UPDATE c SET view = view + 1; END",
                Some(&["invoice"]),
            ),
            ("DROP INDEX by_name", Some(&[])),
            ("ANALYZE customer", None),
            // Hostile or truncated text: an answer, never a panic or a loop.
            ("", None),
            ("CREATE", None),
            ("CREATE TABLE", None),
            ("CREATE TABLE \"never closed", Some(&["never closed"])),
            ("CREATE TABLE [never closed", Some(&["never closed"])),
            ("/* never closed CREATE TABLE t (x)", None),
            ("-- only a comment", None),
            ("CREATE TABLE t.", None),
            ("CREATE INDEX i ON", None),
        ];
        for (sql, tables) in cases {
            let want = tables.map(|t| t.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(changed_tables(sql), want, "{sql}");
        }
    }
}
