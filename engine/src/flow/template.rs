//! `{{ attribute }}` placeholders in start phrases and WhatsApp template parameters.
//!
//! A placeholder is `{{`, optional whitespace, a name of letters, digits, `_`, `.` and
//! `-`, optional whitespace, `}}`. Anything else between braces is not a placeholder and is
//! kept as written, so text with stray braces survives rendering unchanged.

/// A piece of a template: literal text or a placeholder's (trimmed) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The placeholder name if `rest` starts with one, and the length it spans.
fn placeholder_at(rest: &str) -> Option<(&str, usize)> {
    let inner_and_more = rest.strip_prefix("{{")?;
    let close = inner_and_more.find("}}")?;
    let name = inner_and_more[..close].trim();
    (!name.is_empty() && name.chars().all(is_name_char)).then_some((name, close + 4))
}

/// Splits `text` into literal text and placeholders.
fn segments(text: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut literal_start = 0;
    let mut pos = 0;
    while let Some(found) = text[pos..].find("{{") {
        let open = pos + found;
        match placeholder_at(&text[open..]) {
            Some((name, len)) => {
                if literal_start < open {
                    out.push(Segment::Text(&text[literal_start..open]));
                }
                out.push(Segment::Placeholder(name));
                pos = open + len;
                literal_start = pos;
            }
            // Not a placeholder here; one may start at the next brace (`{{{name}}}`).
            None => pos = open + 1,
        }
    }
    if literal_start < text.len() {
        out.push(Segment::Text(&text[literal_start..]));
    }
    out
}

/// Replaces each placeholder with `lookup(name)`; an unknown name renders as "".
pub fn render(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    for segment in segments(text) {
        match segment {
            Segment::Text(t) => out.push_str(t),
            Segment::Placeholder(name) => out.push_str(&lookup(name).unwrap_or_default()),
        }
    }
    out
}

/// The placeholder names in `text`, in order (repeats included), for validation: a bare
/// name is a participant, else a customer attribute; a prefixed one names its property.
pub fn placeholders(text: &str) -> Vec<&str> {
    segments(text)
        .into_iter()
        .filter_map(|s| match s {
            Segment::Placeholder(name) => Some(name),
            Segment::Text(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "name" => Some("Алёна".into()),
            "order_id" => Some("A-17".into()),
            "participant.name" => Some("P".into()),
            "empty" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn renders_the_seed_example() {
        assert_eq!(
            render(
                "Hello {{ name }}, your bank card {{ order_id }} has been shipped!",
                lookup
            ),
            "Hello Алёна, your bank card A-17 has been shipped!"
        );
    }

    #[test]
    fn whitespace_prefixes_and_adjacent_placeholders() {
        assert_eq!(
            render("{{name}}{{order_id}}|{{  participant.name\t}}", lookup),
            "АлёнаA-17|P"
        );
        assert_eq!(
            placeholders("{{name}}{{ order_id }}{{name}}"),
            vec!["name", "order_id", "name"]
        );
    }

    #[test]
    fn unknown_attributes_render_empty() {
        assert_eq!(render("a{{ missing }}b{{empty}}c", lookup), "abc");
    }

    #[test]
    fn malformed_braces_are_left_as_is() {
        for text in [
            "{{ name",
            "{{",
            "}}",
            "{{}}",
            "{{ }}",
            "{{ two words }}",
            "{ name }",
            "price: {{ $total }}",
            "ends with {",
        ] {
            assert_eq!(render(text, lookup), text, "{text}");
            assert!(placeholders(text).is_empty(), "{text}");
        }
        assert_eq!(
            render("{{ name }} and {{ name", lookup),
            "Алёна and {{ name"
        );
        assert_eq!(render("{{{name}}}", lookup), "{Алёна}");
        assert_eq!(render("{{ a {{name}}", lookup), "{{ a Алёна");
    }

    #[test]
    fn multibyte_text_around_and_in_placeholders() {
        assert_eq!(
            render("Привет, {{name}}! 👋 {{ имя }}…", |n| (n
                == "имя")
                .then(|| "ok".to_string())
                .or_else(|| lookup(n))),
            "Привет, Алёна! 👋 ok…"
        );
        assert_eq!(placeholders("日本{{ 名前 }}語"), vec!["名前"]);
        assert_eq!(render("日本{{名前", lookup), "日本{{名前");
    }

    #[test]
    fn text_without_placeholders_is_unchanged() {
        assert_eq!(render("", lookup), "");
        assert_eq!(render("plain text", lookup), "plain text");
        assert!(placeholders("plain").is_empty());
    }
}
