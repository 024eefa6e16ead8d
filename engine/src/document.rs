//! Checks on caller-supplied YAML and JSON documents (agent definitions, campaign flows),
//! made before they are parsed: a size bound, a nesting bound, and no YAML anchors or
//! aliases. An alias repeats its anchor's whole subtree each time it is used, so a small
//! document can expand to gigabytes ("billion laughs"); no definition needs them, and
//! refusing them is what keeps parsing proportional to the input.

use yaml_rust2::parser::{Event, Parser};

/// Bytes in one definition or flow document (room for large knowledge texts and flows of
/// tens of thousands of nodes).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Nested mappings and sequences (arrays, objects) in one document.
pub const MAX_DEPTH: usize = 64;

/// Why a document was refused, in words for the caller (no path: the problem is the
/// document as a whole, at the line given where there is one).
pub fn check_yaml(text: &str) -> Result<(), String> {
    check_size(text)?;
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, at) = parser.next_token().map_err(|e| e.to_string())?;
        let line = at.line();
        let anchored = match event {
            Event::StreamEnd => return Ok(()),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!(
                        "line {line}: nested deeper than {MAX_DEPTH} levels"
                    ));
                }
                anchor
            }
            Event::SequenceEnd | Event::MappingEnd => {
                depth = depth.saturating_sub(1);
                0
            }
            Event::Scalar(_, _, anchor, _) => anchor,
            _ => 0,
        };
        // An alias always follows its anchor (one without is a syntax error above), so
        // refusing anchors refuses every alias.
        if anchored != 0 {
            return Err(format!(
                "line {line}: YAML anchors and aliases (&name, *name) are not accepted; write the value out"
            ));
        }
    }
}

/// JSON has no aliases; its size and nesting are bounded like YAML's.
pub fn check_json(text: &str) -> Result<(), String> {
    check_size(text)?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} levels"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn check_size(text: &str) -> Result<(), String> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(format!(
            "the document is {} bytes; at most {MAX_DOCUMENT_BYTES} are accepted",
            text.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_documents_pass() {
        let yaml = "name: A\nnote: \"*not an alias\"\ntext: 5 * 3 & more\nlist: [a, {b: c}]\n";
        assert_eq!(check_yaml(yaml), Ok(()));
        assert_eq!(check_json(r#"{"a": ["[[[", {"b": "\"{{"}]}"#), Ok(()));
    }

    #[test]
    fn anchors_aliases_and_depth_are_refused() {
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n";
        assert!(check_yaml(bomb).unwrap_err().contains("anchors"));
        assert!(check_yaml("a: &x 1\nb: *x\n")
            .unwrap_err()
            .contains("anchors"));
        assert!(check_yaml("a: *nothing\n").is_err());
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(check_yaml(&deep).unwrap_err().contains("deeper"));
        assert!(check_json(&deep).unwrap_err().contains("deeper"));
        let big = format!("name: \"{}\"", "x".repeat(MAX_DOCUMENT_BYTES));
        assert!(check_yaml(&big).unwrap_err().contains("bytes"));
        assert!(check_json(&big).unwrap_err().contains("bytes"));
    }
}
