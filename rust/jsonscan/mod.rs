//! A one-pass scan of JSON text for its nesting depth, in constant memory.
//!
//! The JSON codec checks the depth of a request body before parsing it (a deeply nested body
//! would otherwise recurse in the parser). The scan keeps three scalars, whatever the body's
//! size: whether it is inside a string, whether the previous byte was an unpaired backslash,
//! and the current depth.

/// The deepest nesting of arrays and objects in `text`; brackets inside strings do not count.
///
/// A quote toggles "inside a string" unless an odd run of backslashes precedes it. Unbalanced
/// closing brackets lower the running depth (the parser reports the text as malformed later);
/// the result is the highest depth reached, 0 for none.
pub fn nesting_depth(text: &[u8]) -> usize {
    let mut in_string = false;
    let mut escaped = false;
    let mut depth: i64 = 0;
    let mut deepest: i64 = 0;
    for &byte in text {
        match byte {
            b'\\' => {
                escaped = !escaped;
                continue;
            }
            b'"' if !escaped => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' if !in_string => depth -= 1,
            _ => {}
        }
        escaped = false;
    }
    deepest.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::nesting_depth;

    #[test]
    fn counts_arrays_and_objects() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(b"[[1], [2, [3]]]"), 3);
        assert_eq!(nesting_depth(b"{\"a\": {\"b\": [1]}}"), 3);
    }

    #[test]
    fn ignores_brackets_in_strings_and_honours_escapes() {
        assert_eq!(nesting_depth(br#"{"a": "[[[[{{{"}"#), 1);
        assert_eq!(nesting_depth(br#"{"a": "\"[[[", "b": [[1]]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a": "\\", "b": [[1]]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a": "\\\"[[", "b": [1]}"#), 2);
    }

    #[test]
    fn unbalanced_closers_never_go_below_zero() {
        assert_eq!(nesting_depth(b"]]]["), 0);
        assert_eq!(nesting_depth(b"]][[["), 1);
    }
}
