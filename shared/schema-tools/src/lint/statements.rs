//! Migration SQL split into statements of normalized tokens, for our rules.

/// One SQL statement: its tokens (keywords upper-cased, identifiers lower-cased and
/// unquoted, string literals kept with their quotes) and its first line.
#[derive(Debug)]
pub(super) struct Statement {
    pub(super) tokens: Vec<String>,
    pub(super) line: usize,
}

impl Statement {
    pub(super) fn is(&self, index: usize, word: &str) -> bool {
        self.tokens.get(index).is_some_and(|token| token == word)
    }
    pub(super) fn starts(&self, words: &[&str]) -> bool {
        words.iter().enumerate().all(|(i, word)| self.is(i, word))
    }
    pub(super) fn contains(&self, words: &[&str]) -> bool {
        self.tokens
            .windows(words.len())
            .any(|window| window.iter().zip(words).all(|(a, b)| a == b))
    }
    /// The (unqualified) name starting at `index`, skipping IF [NOT] EXISTS / ONLY.
    pub(super) fn name_at(&self, mut index: usize) -> Option<(String, usize)> {
        while matches!(
            self.tokens.get(index).map(String::as_str),
            Some("IF") | Some("NOT") | Some("EXISTS") | Some("ONLY")
        ) {
            index += 1;
        }
        let mut name = self.tokens.get(index)?.to_ascii_lowercase();
        index += 1;
        while self.is(index, ".") {
            name = self.tokens.get(index + 1)?.to_ascii_lowercase();
            index += 2;
        }
        Some((name, index))
    }
    /// The table an index or trigger is `ON` (empty when there is none).
    pub(super) fn table_after_on(&self) -> String {
        self.tokens
            .iter()
            .position(|token| token == "ON")
            .and_then(|on| self.name_at(on + 1))
            .map(|(name, _)| name)
            .unwrap_or_default()
    }
}

/// Split SQL into statements (outside comments, strings, quoted names and dollar quotes).
pub(super) fn statements(text: &str) -> Vec<Statement> {
    let chars: Vec<char> = text.chars().collect();
    let mut statements = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut line = 1;
    let mut start_line = 1;
    let mut i = 0;
    let push = |tokens: &mut Vec<String>, start_line: &mut usize, line: usize, token: String| {
        if tokens.is_empty() {
            *start_line = line;
        }
        tokens.push(token);
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '-' && chars.get(i + 1) == Some(&'-') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let quote = c;
            let mut token = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == quote {
                    if chars.get(i + 1) == Some(&quote) {
                        token.push(quote);
                        i += 2;
                        continue;
                    }
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                token.push(chars[i]);
                i += 1;
            }
            i += 1;
            let token = if quote == '\'' {
                format!("'{token}'")
            } else {
                token.to_ascii_lowercase()
            };
            push(&mut tokens, &mut start_line, line, token);
        } else if c == '$' {
            // $tag$ ... $tag$
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if chars.get(j) == Some(&'$') {
                let tag: String = chars[i..=j].iter().collect();
                let rest: String = chars[j + 1..].iter().collect();
                let end = rest
                    .find(&tag)
                    .map(|end| end + tag.len())
                    .unwrap_or(rest.len());
                let body: String = rest.chars().take(end).collect();
                line += body.matches('\n').count();
                i = j + 1 + body.chars().count();
                push(&mut tokens, &mut start_line, line, "$BODY$".to_owned());
            } else {
                i += 1;
            }
        } else if c == ';' {
            if !tokens.is_empty() {
                statements.push(Statement {
                    tokens: std::mem::take(&mut tokens),
                    line: start_line,
                });
            }
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut word = String::new();
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                word.push(chars[i]);
                i += 1;
            }
            push(
                &mut tokens,
                &mut start_line,
                line,
                word.to_ascii_uppercase(),
            );
        } else {
            push(&mut tokens, &mut start_line, line, c.to_string());
            i += 1;
        }
    }
    if !tokens.is_empty() {
        statements.push(Statement {
            tokens,
            line: start_line,
        });
    }
    statements
}
