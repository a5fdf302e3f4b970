//! A small lexer for the shell text agents and operators write: it splits a
//! command into the simple commands bash would run and resolves each word's
//! quoting, so checks look at what runs, not at how it is spelled
//! (`'con'da`, `\conda`, `python3 -mvenv`, `a; conda create`, `$(conda ...)`).
//!
//! It is deliberately smaller than bash: what it cannot resolve it marks,
//! and the callers treat a mark as "unsure" and refuse:
//! - a word with an expansion (`$c`, `${c}`, `$(...)`, backquotes,
//!   `$((...))`) is `dynamic`: its value is only known when the job runs;
//! - nesting deeper than [`MAX_DEPTH`] sets [`Lexed::overflow`].
//!
//! Commands inside `$(...)`, backquotes, `<(...)` and unquoted here-document
//! bodies run too, so they are returned as simple commands of their own.
//! Here-document bodies are kept with their command (a shell reading one
//! from stdin runs it).
//!
//! The lexer also finds where preset parameters land ([`PLACEHOLDER_BASE`]):
//! each is a private-use character, and [`Lexed::unquoted_placeholders`]
//! counts those met as plain unquoted word text, where a single-quoted value
//! is one literal word. Anywhere else (inside quotes, a comment, a
//! here-document, `${...}`, arithmetic, backquotes, after `$` or `\`) the
//! character is not counted, and the caller refuses the template.

/// Deeper nesting of `$(`/backquotes/`eval`/`bash -c` is not followed.
pub const MAX_DEPTH: usize = 32;

/// First of the characters that stand for preset parameters while a
/// template is lexed (Unicode plane 15, private use: never typed by hand).
pub const PLACEHOLDER_BASE: u32 = 0xF_0000;

pub fn is_placeholder(c: char) -> bool {
    (PLACEHOLDER_BASE..PLACEHOLDER_BASE + 0xFFFD).contains(&u32::from(c))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Word {
    /// The word after quote removal; expansions contribute nothing.
    pub text: String,
    /// It contains an expansion.
    pub dynamic: bool,
    /// The word as written (for messages).
    pub shown: String,
    /// Byte length of `text` when the last expansion was met.
    last_expansion_at: usize,
    /// `NAME=` (or `NAME+=`, `NAME[..]=`) written unquoted at its start.
    pub assignment: bool,
    /// Unquoted literal text before the first quote or expansion.
    plain_prefix: String,
    quoted_or_expanded: bool,
}

impl Word {
    /// The command name this word runs, when it is known: the whole word,
    /// or its last path component when that is written literally
    /// (`"$HOME/env/bin/python"` runs `python`; `$PY` is unknown).
    pub fn static_name(&self) -> Option<&str> {
        let tail = self.text.get(self.last_expansion_at..)?;
        if self.dynamic && !tail.contains('/') {
            return None;
        }
        Some(tail.rsplit('/').next().unwrap_or(tail))
    }

    /// The word's text if it has no expansion at all.
    pub fn literal(&self) -> Option<&str> {
        (!self.dynamic).then_some(self.text.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleCommand {
    /// Words, without redirections and their targets.
    pub words: Vec<Word>,
    /// Bodies of its here-documents (and here-strings), as written.
    pub stdin_texts: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Lexed {
    pub commands: Vec<SimpleCommand>,
    /// Nesting went deeper than [`MAX_DEPTH`]; some text was not read.
    pub overflow: bool,
    /// Placeholders met as unquoted word text.
    pub unquoted_placeholders: usize,
}

/// Split `text` into simple commands.
pub fn lex(text: &str) -> Lexed {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        out: Lexed::default(),
    };
    lexer.commands(Until::End, true, 0);
    lexer.out
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    End,
    /// The `)` of `$(` or `<(`.
    Paren,
}

struct Heredoc {
    delimiter: String,
    strip_tabs: bool,
    expands: bool,
    /// Index into the frame's command list.
    command: usize,
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    out: Lexed,
}

/// What is being built while one list of commands is read.
struct Frame {
    commands: Vec<SimpleCommand>,
    current: SimpleCommand,
    word: Option<Word>,
    /// The next word is a redirection's target, not an argument.
    redirect_target: bool,
    heredoc_word: Option<(bool, bool)>,
    heredocs: Vec<Heredoc>,
    here_string: bool,
    parens: usize,
    cases: usize,
}

impl Frame {
    fn new() -> Frame {
        Frame {
            commands: Vec::new(),
            current: SimpleCommand::default(),
            word: None,
            redirect_target: false,
            heredoc_word: None,
            heredocs: Vec::new(),
            here_string: false,
            parens: 0,
            cases: 0,
        }
    }

    fn word(&mut self) -> &mut Word {
        self.word.get_or_insert_with(Word::default)
    }

    fn end_word(&mut self) {
        let Some(mut w) = self.word.take() else {
            return;
        };
        w.assignment = is_assignment(&w.plain_prefix);
        if let Some((strip_tabs, expands)) = self.heredoc_word.take() {
            self.heredocs.push(Heredoc {
                delimiter: w.text,
                strip_tabs,
                expands,
                command: self.commands.len(),
            });
            return;
        }
        if self.here_string {
            self.here_string = false;
            self.current.stdin_texts.push(w.text);
            return;
        }
        if self.redirect_target {
            self.redirect_target = false;
            return;
        }
        if self.current.words.is_empty() {
            match w.literal() {
                Some("case") => self.cases += 1,
                Some("esac") => self.cases = self.cases.saturating_sub(1),
                _ => {}
            }
        }
        self.current.words.push(w);
    }

    fn end_command(&mut self) {
        self.end_word();
        // Empty ones too, so pending here-documents keep their index;
        // they are dropped when the list is done.
        let done = std::mem::take(&mut self.current);
        self.commands.push(done);
    }
}

fn is_assignment(prefix: &str) -> bool {
    let Some(eq) = prefix.find('=') else {
        return false;
    };
    let name = prefix.get(..eq).unwrap_or("");
    let name = name.strip_suffix('+').unwrap_or(name);
    let name = match name.find('[') {
        Some(i) if name.ends_with(']') => name.get(..i).unwrap_or(""),
        _ => name,
    };
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek(0);
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Read commands until `until`; `safe` says whether unquoted text here
    /// is plain shell words (false inside double quotes or backquotes).
    fn commands(&mut self, until: Until, safe: bool, depth: usize) {
        if depth > MAX_DEPTH {
            self.out.overflow = true;
            self.pos = self.chars.len();
            return;
        }
        let mut f = Frame::new();
        while let Some(c) = self.peek(0) {
            match c {
                ' ' | '\t' => {
                    f.end_word();
                    self.pos += 1;
                }
                '\n' => {
                    self.pos += 1;
                    f.end_command();
                    self.heredoc_bodies(&mut f, depth);
                }
                '#' if f.word.is_none() => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                ';' | '&' | '|' => {
                    f.end_command();
                    self.pos += 1;
                }
                '(' if f.word.is_none() && self.peek(1) == Some('(') => {
                    // `(( arithmetic ))`: no command runs, nothing is a word.
                    f.end_command();
                    self.skip_arithmetic(depth);
                }
                '(' => {
                    f.end_command();
                    f.parens += 1;
                    self.pos += 1;
                }
                ')' if f.parens > 0 => {
                    f.end_command();
                    f.parens -= 1;
                    self.pos += 1;
                }
                ')' if f.cases > 0 => {
                    // A `case` pattern ends; the commands of its branch follow.
                    f.end_command();
                    self.pos += 1;
                }
                ')' if until == Until::Paren => {
                    self.pos += 1;
                    break;
                }
                ')' => {
                    f.end_command();
                    self.pos += 1;
                }
                '<' | '>' => self.redirection(&mut f, safe, depth),
                _ => self.word_part(&mut f, safe, depth),
            }
        }
        f.end_command();
        self.heredoc_bodies(&mut f, depth);
        self.out
            .commands
            .extend(f.commands.into_iter().filter(|c| !c.words.is_empty()));
    }

    fn redirection(&mut self, f: &mut Frame, safe: bool, depth: usize) {
        // `2>`: a word of digits just before is the descriptor, not a word.
        if f.word.as_ref().is_some_and(|w| {
            !w.quoted_or_expanded
                && !w.text.is_empty()
                && w.text.bytes().all(|b| b.is_ascii_digit())
        }) {
            f.word = None;
        } else {
            f.end_word();
        }
        let first = self.bump();
        if self.peek(0) == Some('(') {
            // Process substitution `<(...)`/`>(...)`: commands that run.
            self.pos += 1;
            self.commands(Until::Paren, safe, depth + 1);
            let w = f.word();
            w.dynamic = true;
            w.quoted_or_expanded = true;
            w.last_expansion_at = w.text.len();
            return;
        }
        if first == Some('<') && self.peek(0) == Some('<') {
            self.pos += 1;
            if self.peek(0) == Some('<') {
                self.pos += 1;
                f.here_string = true;
                return;
            }
            let strip_tabs = self.peek(0) == Some('-');
            if strip_tabs {
                self.pos += 1;
            }
            // The delimiter is quoted if any part of it is.
            let mut look = self.pos;
            while self
                .chars
                .get(look)
                .is_some_and(|c| *c == ' ' || *c == '\t')
            {
                look += 1;
            }
            let mut expands = true;
            while let Some(c) = self.chars.get(look) {
                if c.is_whitespace() || matches!(c, ';' | '&' | '|' | '<' | '>' | '(' | ')') {
                    break;
                }
                if matches!(c, '\'' | '"' | '\\') {
                    expands = false;
                }
                look += 1;
            }
            f.heredoc_word = Some((strip_tabs, expands));
            return;
        }
        // `>>`, `>&`, `<&`, `<>`, `>|`, `&>` are all followed by a target.
        while self.peek(0).is_some_and(|c| matches!(c, '>' | '&' | '|')) {
            self.pos += 1;
        }
        f.redirect_target = true;
    }

    /// Read the bodies of the here-documents whose line just ended.
    fn heredoc_bodies(&mut self, f: &mut Frame, depth: usize) {
        for doc in std::mem::take(&mut f.heredocs) {
            let mut body = String::new();
            loop {
                if self.pos >= self.chars.len() {
                    break;
                }
                let mut line = String::new();
                while let Some(c) = self.bump() {
                    if c == '\n' {
                        break;
                    }
                    line.push(c);
                }
                let compared = if doc.strip_tabs {
                    line.trim_start_matches('\t')
                } else {
                    line.as_str()
                };
                if compared == doc.delimiter {
                    break;
                }
                body.push_str(&line);
                body.push('\n');
            }
            if doc.expands {
                // `$(...)` and backquotes in the body run.
                let mut inner = Lexer {
                    chars: body.chars().collect(),
                    pos: 0,
                    out: Lexed::default(),
                };
                inner.expansions_only(depth + 1);
                self.absorb(inner.out);
            }
            if let Some(cmd) = f.commands.get_mut(doc.command) {
                cmd.stdin_texts.push(body);
            }
        }
    }

    fn absorb(&mut self, other: Lexed) {
        self.out.commands.extend(other.commands);
        self.out.overflow |= other.overflow;
    }

    /// Text that is not commands but expands like double-quoted text.
    fn expansions_only(&mut self, depth: usize) {
        let mut scratch = Word::default();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.pos += 1;
                }
                '$' => self.dollar(&mut scratch, false, false, depth),
                '`' => self.backquote(&mut scratch, depth),
                _ => {}
            }
        }
    }

    fn mark_dynamic(w: &mut Word) {
        w.dynamic = true;
        w.quoted_or_expanded = true;
        w.last_expansion_at = w.text.len();
    }

    fn word_part(&mut self, f: &mut Frame, safe: bool, depth: usize) {
        let start = self.pos;
        self.word_part_inner(f, safe, depth);
        let written: String = self
            .chars
            .get(start..self.pos)
            .unwrap_or_default()
            .iter()
            .collect();
        f.word().shown.push_str(&written);
    }

    fn word_part_inner(&mut self, f: &mut Frame, safe: bool, depth: usize) {
        let Some(c) = self.bump() else { return };
        match c {
            '\\' => match self.bump() {
                Some('\n') | None => {}
                Some(next) => {
                    let w = f.word();
                    w.quoted_or_expanded = true;
                    w.text.push(next);
                }
            },
            '\'' => {
                let w = f.word();
                w.quoted_or_expanded = true;
                while let Some(c) = self.bump() {
                    if c == '\'' {
                        break;
                    }
                    f.word().text.push(c);
                }
            }
            '"' => {
                f.word().quoted_or_expanded = true;
                self.double_quoted(f, depth);
            }
            '`' => {
                let w = f.word();
                self.backquote(w, depth);
            }
            '$' => {
                let mut w = f.word.take().unwrap_or_default();
                self.dollar(&mut w, safe, true, depth);
                f.word = Some(w);
            }
            c => {
                // Not after a literal `$` (`$'...'` is ANSI-C quoting, where
                // `\'` does not end the string) nor as a here-document's
                // delimiter.
                let after_dollar = self.pos >= 2 && self.chars.get(self.pos - 2) == Some(&'$');
                let counts = safe && !after_dollar && f.heredoc_word.is_none();
                let w = f.word();
                if is_placeholder(c) && counts {
                    self.out.unquoted_placeholders += 1;
                }
                if !w.quoted_or_expanded {
                    w.plain_prefix.push(c);
                }
                w.text.push(c);
            }
        }
    }

    fn double_quoted(&mut self, f: &mut Frame, depth: usize) {
        while let Some(c) = self.bump() {
            match c {
                '"' => return,
                '\\' => match self.bump() {
                    Some(n @ ('$' | '`' | '"' | '\\')) => f.word().text.push(n),
                    Some('\n') | None => {}
                    Some(n) => {
                        let w = f.word();
                        w.text.push('\\');
                        w.text.push(n);
                    }
                },
                '$' => {
                    let mut w = f.word.take().unwrap_or_default();
                    self.dollar(&mut w, false, false, depth);
                    f.word = Some(w);
                }
                '`' => {
                    let w = f.word();
                    self.backquote(w, depth);
                }
                c => f.word().text.push(c),
            }
        }
    }

    /// After a `$`: a parameter, `${...}`, `$(...)`, `$((...))`, `$'...'`,
    /// `$"..."`, or a literal `$`. `safe`: commands in `$(...)` are read
    /// as plain shell text (false when this `$` is itself quoted).
    fn dollar(&mut self, w: &mut Word, safe: bool, unquoted: bool, depth: usize) {
        match self.peek(0) {
            Some('(') if self.peek(1) == Some('(') => {
                self.skip_arithmetic(depth);
                Self::mark_dynamic(w);
            }
            Some('(') => {
                self.pos += 1;
                self.commands(Until::Paren, safe, depth + 1);
                Self::mark_dynamic(w);
            }
            Some('{') => {
                self.pos += 1;
                self.skip_braces(depth);
                Self::mark_dynamic(w);
            }
            Some('\'') if unquoted => {
                self.pos += 1;
                w.quoted_or_expanded = true;
                self.ansi_c(w);
            }
            Some('"') if unquoted => {
                // Locale translation: read as a double-quoted string.
                self.pos += 1;
                let mut f = Frame::new();
                f.word = Some(std::mem::take(w));
                self.double_quoted(&mut f, depth);
                *w = f.word.unwrap_or_default();
                w.quoted_or_expanded = true;
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                while self
                    .peek(0)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                Self::mark_dynamic(w);
            }
            Some('@' | '*' | '#' | '?' | '-' | '$' | '!') => {
                self.pos += 1;
                Self::mark_dynamic(w);
            }
            _ => {
                // A lone `$` is literal; a placeholder after it is not
                // counted (`$'...'` would be read as ANSI-C quoting).
                w.quoted_or_expanded = true;
                w.text.push('$');
            }
        }
    }

    /// `$'...'`, with bash's escapes decoded (`$'\x63onda'` is `conda`).
    fn ansi_c(&mut self, w: &mut Word) {
        while let Some(c) = self.bump() {
            match c {
                '\'' => return,
                '\\' => {
                    let Some(e) = self.bump() else { return };
                    let simple = match e {
                        'a' => Some('\u{7}'),
                        'b' => Some('\u{8}'),
                        'e' | 'E' => Some('\u{1b}'),
                        'f' => Some('\u{c}'),
                        'n' => Some('\n'),
                        'r' => Some('\r'),
                        't' => Some('\t'),
                        'v' => Some('\u{b}'),
                        '\\' | '\'' | '"' | '?' => Some(e),
                        _ => None,
                    };
                    if let Some(s) = simple {
                        w.text.push(s);
                        continue;
                    }
                    let (radix, max, first) = match e {
                        'x' => (16, 2, None),
                        'u' => (16, 4, None),
                        'U' => (16, 8, None),
                        '0'..='7' => (8, 2, Some(e)),
                        'c' => {
                            if let Some(x) = self.bump() {
                                w.text.push(char::from(x as u8 & 0x1f));
                            }
                            continue;
                        }
                        other => {
                            w.text.push('\\');
                            w.text.push(other);
                            continue;
                        }
                    };
                    let mut digits: String = first.into_iter().collect();
                    while digits.len() < max + usize::from(first.is_some())
                        && self.peek(0).is_some_and(|d| d.is_digit(radix))
                    {
                        digits.extend(self.bump());
                    }
                    match u32::from_str_radix(&digits, radix)
                        .ok()
                        .and_then(char::from_u32)
                    {
                        Some(ch) => w.text.push(ch),
                        None => Self::mark_dynamic(w),
                    }
                }
                c => w.text.push(c),
            }
        }
    }

    /// A backquoted command: its text with `\``, `\\` and `\$` unescaped,
    /// read as commands (not as plain words: quotes inside are re-read).
    fn backquote(&mut self, w: &mut Word, depth: usize) {
        let mut inner = String::new();
        while let Some(c) = self.bump() {
            match c {
                '`' => break,
                '\\' => match self.bump() {
                    Some(n @ ('`' | '\\' | '$')) => inner.push(n),
                    Some(n) => {
                        inner.push('\\');
                        inner.push(n);
                    }
                    None => {}
                },
                c => inner.push(c),
            }
        }
        let mut sub = Lexer {
            chars: inner.chars().collect(),
            pos: 0,
            out: Lexed::default(),
        };
        sub.commands(Until::End, false, depth + 1);
        self.absorb(sub.out);
        Self::mark_dynamic(w);
    }

    /// Past `${...}` (nested braces and quotes followed); commands in it
    /// (`${x:-$(cmd)}`) are read.
    fn skip_braces(&mut self, depth: usize) {
        let mut open = 1usize;
        let mut scratch = Word::default();
        while let Some(c) = self.bump() {
            match c {
                '\\' => {
                    self.pos += 1;
                }
                '\'' => while self.bump().is_some_and(|c| c != '\'') {},
                '$' => self.dollar(&mut scratch, false, false, depth),
                '`' => self.backquote(&mut scratch, depth),
                '{' => open += 1,
                '}' => {
                    open -= 1;
                    if open == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }

    /// Past `((...))` or `$((...))` (at the first `(`).
    fn skip_arithmetic(&mut self, depth: usize) {
        let mut open = 0usize;
        let mut scratch = Word::default();
        while let Some(c) = self.bump() {
            match c {
                '(' => open += 1,
                ')' => {
                    open = open.saturating_sub(1);
                    if open == 0 {
                        return;
                    }
                }
                '$' => self.dollar(&mut scratch, false, false, depth),
                '`' => self.backquote(&mut scratch, depth),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<Vec<String>> {
        lex(text)
            .commands
            .iter()
            .map(|c| c.words.iter().map(|w| w.text.clone()).collect())
            .collect()
    }

    #[test]
    fn splits_commands_and_resolves_quotes() {
        assert_eq!(
            words("a=1 'con'da \"cre\"ate -n x; echo \\conda && b | c & d\ne || f"),
            vec![
                vec!["a=1", "conda", "create", "-n", "x"],
                vec!["echo", "conda"],
                vec!["b"],
                vec!["c"],
                vec!["d"],
                vec!["e"],
                vec!["f"],
            ]
        );
        assert_eq!(words("echo $'\\x63onda'"), vec![vec!["echo", "conda"]]);
        assert_eq!(
            words("x=$(conda create -n y) `mamba create`"),
            vec![
                vec!["conda", "create", "-n", "y"],
                vec!["mamba", "create"],
                vec!["x=", ""],
            ]
        );
        assert_eq!(
            words("( cd d && virtualenv v ) > log 2>&1"),
            vec![vec!["cd", "d"], vec!["virtualenv", "v"]]
        );
        assert_eq!(
            words("cat <<EOF\n$(conda create)\nEOF\necho ok"),
            vec![vec!["conda", "create"], vec!["cat"], vec!["echo", "ok"]]
        );
        assert_eq!(
            words("# conda create\necho 'a # b'"),
            vec![vec!["echo", "a # b"]]
        );
    }

    #[test]
    fn expansions_are_dynamic_and_assignments_known() {
        let l = lex("c=conda; $c create; \"${c}\" create; \"$HOME/v/bin/python\" x");
        let first: Vec<(bool, bool)> = l
            .commands
            .iter()
            .map(|c| {
                let w = c.words.first().unwrap();
                (w.dynamic, w.assignment)
            })
            .collect();
        assert_eq!(
            first,
            vec![(false, true), (true, false), (true, false), (true, false)]
        );
        let names: Vec<Option<&str>> = l
            .commands
            .iter()
            .map(|c| c.words.first().unwrap().static_name())
            .collect();
        assert_eq!(names, vec![Some("c=conda"), None, None, Some("python")]);
        assert!(!lex("\"a=b\" x").commands[0].words[0].assignment);
    }

    #[test]
    fn deep_nesting_is_reported_not_followed() {
        let deep = "$(".repeat(200) + &")".repeat(200);
        assert!(lex(&deep).overflow);
        assert!(!lex("$($(echo))").overflow);
    }

    #[test]
    fn placeholders_are_counted_only_as_plain_words() {
        let p = char::from_u32(PLACEHOLDER_BASE).unwrap();
        for (template, counted) in [
            ("echo {}", 1),
            ("echo --lr={} x{}y", 2),
            ("echo $(basename {})", 1),
            ("echo \"{}\"", 0),
            ("echo '{}'", 0),
            ("echo \"$(echo {})\"", 0),
            ("echo `echo {}`", 0),
            ("echo ${x:-{}}", 0),
            ("echo ${}", 0),
            ("echo \\{}", 0),
            ("# {}", 0),
            ("cat <<E\n{}\nE", 0),
            ("cat <<{}\nx\n", 0),
            ("(( x = {} ))", 0),
            ("echo $(( {} ))", 0),
        ] {
            let text = template.replace("{}", &p.to_string());
            assert_eq!(lex(&text).unquoted_placeholders, counted, "{template}");
        }
    }
}
