//! llama.cpp's `response_fields`: a request may name the only fields of the answer it wants, as
//! paths through nested objects (`"timings/prompt_n"`), and then gets one flat object keyed by
//! those paths (`{"content": "...", "timings/prompt_n": 17}`); a path that names nothing is left
//! out. llama.vim asks for its fields this way and reads the timings it shows from the flat keys.

use serde_json::{Map, Value};

/// The answer reduced to `paths`, keyed by each path; the whole answer when `paths` is empty.
pub(crate) fn select_response_fields(answer: Value, paths: &[String]) -> Value {
    if paths.is_empty() {
        return answer;
    }
    let mut selected = Map::new();
    for path in paths {
        // Walk the path one key at a time through objects; stop at the first key that is missing.
        let found = path
            .split('/')
            .try_fold(&answer, |value, key| value.get(key));
        if let Some(value) = found {
            selected.insert(path.clone(), value.clone());
        }
    }
    Value::Object(selected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn no_paths_keep_the_whole_answer() {
        let answer = json!({"content": "x", "timings": {"prompt_n": 3}});
        assert_eq!(select_response_fields(answer.clone(), &[]), answer);
    }

    #[test]
    fn nested_paths_become_flat_keys_and_missing_ones_are_left_out() {
        let answer = json!({
            "content": "    return 1",
            "tokens_cached": 40,
            "truncated": false,
            "tokens": [1, 2],
            "timings": {"prompt_n": 17, "predicted_ms": 12.5},
        });
        let selected = select_response_fields(
            answer,
            &paths(&[
                "content",
                "timings/prompt_n",
                "timings/predicted_ms",
                "timings/not_there",
                "content/deeper",
                "truncated",
                "tokens_cached",
            ]),
        );
        assert_eq!(
            selected,
            json!({
                "content": "    return 1",
                "timings/prompt_n": 17,
                "timings/predicted_ms": 12.5,
                "truncated": false,
                "tokens_cached": 40,
            })
        );
    }

    #[test]
    fn an_empty_path_selects_nothing() {
        // llama.vim's background context requests ask for `[""]`: they want no answer.
        let answer = json!({"content": "", "timings": {}});
        assert_eq!(select_response_fields(answer, &paths(&[""])), json!({}));
    }
}
