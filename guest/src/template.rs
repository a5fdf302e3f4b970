//! Preset command templates: shell text with `{{ name }}` placeholders,
//! each filled with one parameter value as one literal shell word.
//!
//! Why not minijinja, and why the placement rule: a value is made safe by
//! single-quoting it, and two things can undo that.
//! - The template itself: with a template language, a filter or a slice
//!   (`{{ x[1:-1] }}`, `{{ x | replace("'", "") }}`) strips the quotes
//!   again. So a template is plain text and placeholders, nothing else.
//! - Where the word lands: inside the template's own quotes
//!   (`echo "{{ x }}"` with `"; id; "`), a comment or a here-document
//!   (a newline ends it), backquotes, `${...}`, arithmetic, or after `$`
//!   or `\`, single quotes are not quotes. So each placeholder must be
//!   plain unquoted shell text, checked with the shell lexer when the
//!   config is read ([`crate::shell`]).
//!
//! Refusing "dangerous" characters in values instead would depend on every
//! operator's `pattern`, and would still not cover a template that puts
//! the value in a context we did not think of; this way the template is
//! refused once, whatever any value is. What a program does with its
//! argument (`eval {{ x }}`, `bash -c {{ x }}`) is the template's own
//! choice: the value is still exactly one word.

use crate::shell::{PLACEHOLDER_BASE, is_placeholder, lex};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

const HOW: &str =
    "a preset command is shell text with {{ name }} placeholders only (no other template syntax)";

impl Template {
    /// Parse and check `text`; every placeholder must name one of `declared`.
    pub fn parse(text: &str, declared: &[&str]) -> Result<Template, String> {
        if text.chars().any(is_placeholder) {
            return Err("contains private-use characters (U+F0000..), which are reserved".into());
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let (before, after) = rest.split_at(start);
            refuse_syntax(before)?;
            if !before.is_empty() {
                pieces.push(Piece::Text(before.to_string()));
            }
            let inner_start = after.get(2..).unwrap_or("");
            let Some(end) = inner_start.find("}}") else {
                return Err(format!("{HOW}: unclosed {{{{"));
            };
            let name = inner_start.get(..end).unwrap_or("").trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!(
                    "{HOW}: {{{{{}}}}} is not a placeholder",
                    inner_start.get(..end).unwrap_or("")
                ));
            }
            if !declared.contains(&name) {
                return Err(format!(
                    "{{{{ {name} }}}} is not a declared parameter (declared: {})",
                    if declared.is_empty() {
                        "none".to_string()
                    } else {
                        declared.join(", ")
                    }
                ));
            }
            pieces.push(Piece::Param(name.to_string()));
            rest = inner_start.get(end + 2..).unwrap_or("");
        }
        refuse_syntax(rest)?;
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        let template = Template { pieces };
        template.check_placement()?;
        Ok(template)
    }

    /// Every placeholder must be read by the shell as plain unquoted text.
    fn check_placement(&self) -> Result<(), String> {
        let mut marked = String::new();
        let mut count = 0u32;
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => marked.push_str(t),
                Piece::Param(_) => {
                    marked.extend(char::from_u32(PLACEHOLDER_BASE + count));
                    count += 1;
                }
            }
        }
        let seen = lex(&marked).unquoted_placeholders;
        if seen == count as usize {
            return Ok(());
        }
        let names: Vec<&str> = self
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Param(n) => Some(n.as_str()),
                Piece::Text(_) => None,
            })
            .collect();
        Err(format!(
            "a placeholder ({}) is inside quotes, backquotes, ${{...}}, arithmetic, a comment or a here-document, or right after $ or \\; write it as a plain word (echo {{{{ x }}}}, not echo \"{{{{ x }}}}\"): the value is inserted already shell-quoted, and quotes around it would undo that",
            names.join(", ")
        ))
    }

    /// The command with each placeholder replaced by its value as one
    /// shell word. `value` gives the (already checked) value of a name.
    pub fn render(&self, value: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Param(name) => {
                    let v = value(name).ok_or_else(|| format!("no value for {{{{ {name} }}}}"))?;
                    out.push_str(&crate::script::shell_word(&v));
                }
            }
        }
        Ok(out)
    }
}

/// Text between placeholders may not hold other template syntax (which an
/// earlier version rendered with minijinja).
fn refuse_syntax(text: &str) -> Result<(), String> {
    match ["{%", "{#", "}}"].iter().find(|s| text.contains(**s)) {
        Some(s) => Err(format!("{HOW}: found {s:?}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Render `template` with x = `value` and run it with bash: what the
    /// command printed, and whether `id` ran.
    fn run(template: &str, value: &str) -> Result<String, String> {
        let t = Template::parse(template, &["x"])?;
        let cmd = t.render(|_| Some(value.to_string()))?;
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&cmd)
            .output()
            .unwrap();
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    #[test]
    fn values_are_one_literal_word() {
        for value in [
            "\"; id; \"",
            "'; id; '",
            "$(id)",
            "`id`",
            "a\\",
            "x y",
            "-n",
        ] {
            let printed = run("printf '[%s]' {{ x }}", value).unwrap();
            assert_eq!(printed, format!("[{value}]"), "{value}");
            let printed = run("printf '[%s]' --v={{x}}", value).unwrap();
            assert_eq!(printed, format!("[--v={value}]"), "{value}");
        }
    }

    /// Negative control (run once): with `check_placement` always Ok,
    /// `echo "{{ x }}"` with `"; id; "` rendered and bash ran `id` (it
    /// printed `uid=0(root) ...`), so this test failed.
    #[test]
    fn placeholders_inside_quotes_or_comments_are_refused() {
        for template in [
            "echo \"{{ x }}\"",
            "echo '{{ x }}'",
            "echo \"a $(echo {{ x }})\"",
            "echo `echo {{ x }}`",
            "# {{ x }}",
            "cat <<E\n{{ x }}\nE",
            "echo ${v:-{{ x }}}",
            "echo ${{ x }}",
            "echo \\{{ x }}",
            "(( n = {{ x }} ))",
        ] {
            let e = run(template, "\"; id; \"").unwrap_err();
            assert!(e.contains("plain word"), "{template}: {e}");
            let e = run(template, "'; id; '").unwrap_err();
            assert!(e.contains("plain word"), "{template}: {e}");
        }
    }

    #[test]
    fn only_placeholders_are_template_syntax() {
        for (template, says) in [
            ("echo {{ x | upper }}", "is not a placeholder"),
            ("echo {{ x[1:-1] }}", "is not a placeholder"),
            ("{% if x %}echo{% endif %}", "found \"{%\""),
            ("echo {{ y }}", "not a declared parameter"),
            ("echo {{ x", "unclosed"),
            ("echo }}", "found \"}}\""),
        ] {
            let e = Template::parse(template, &["x"]).unwrap_err();
            assert!(e.contains(says), "{template}: {e}");
        }
        let t =
            Template::parse("python3 t.py --lr {{ lr }} --tag {{tag}}", &["lr", "tag"]).unwrap();
        let rendered = t
            .render(|n| Some(if n == "lr" { "0.5" } else { "a b" }.to_string()))
            .unwrap();
        assert_eq!(rendered, "python3 t.py --lr 0.5 --tag 'a b'");
    }
}
