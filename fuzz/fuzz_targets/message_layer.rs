//! Fuzz target: the language server's message and document layer on arbitrary bytes —
//! `Content-Length` framing, message checks and surrogate repair, `didOpen`/`didChange` applied to
//! the document store, position conversion in the encoding the first byte picks. The invariants
//! are asserted in `lmrs_lsp::lsp::fuzzing::message_layer`; any panic is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lmrs_lsp::lsp::fuzzing::message_layer(data);
});
