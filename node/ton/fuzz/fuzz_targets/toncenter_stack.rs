//! Fuzz the decoders of a toncenter `runGetMethod` reply, which come from the network:
//! the JSON stack (`StackEntry::from_toncenter`, also what `cocoon ton-local` parses from
//! a request) and `get_channel_data`'s decoded stack (`decode_channel_data`). Nothing may
//! panic; whatever decodes must re-encode to JSON that decodes to the same entries.
#![no_main]

use cocoon_ton::client::decode_channel_data;
use cocoon_ton::stack::StackEntry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let items = match &v {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    let stack: Vec<StackEntry> = items
        .iter()
        .filter_map(|x| StackEntry::from_toncenter(x).ok())
        .collect();
    for e in &stack {
        let again = StackEntry::from_toncenter(&e.to_toncenter()).expect("re-encoded entry decodes");
        assert_eq!(&again, e);
    }
    let _ = decode_channel_data(&stack);
});
