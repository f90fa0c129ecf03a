//! How errors are shown to the user: the message, then each cause it does not already spell out.

use std::error::Error;

/// `error`'s message followed by its causes (its `source()` chain), joined by `separator`; a cause
/// whose text the message before it already contains is left out (library errors often include
/// their source's message in their own).
pub fn describe(error: &(dyn Error + 'static), separator: &str) -> String {
    let mut out = error.to_string();
    let mut previous = out.clone();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !previous.contains(&text) {
            out.push_str(separator);
            out.push_str(&text);
        }
        previous = text;
        cause = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: String,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(messages: &[&str]) -> Layer {
        let mut error: Option<Box<Layer>> = None;
        for message in messages.iter().rev() {
            error = Some(Box::new(Layer {
                message: message.to_string(),
                source: error,
            }));
        }
        *error.unwrap()
    }

    #[test]
    fn causes_already_spelled_out_are_left_out() {
        let error = chain(&[
            "loading m.gguf",
            "m.gguf: truncated at byte 9",
            "truncated at byte 9",
        ]);
        assert_eq!(
            describe(&error, "\n  caused by: "),
            "loading m.gguf\n  caused by: m.gguf: truncated at byte 9"
        );
        assert_eq!(describe(&chain(&["a", "b", "c"]), ": "), "a: b: c");
    }
}
