#![no_main]
//! Every decoder on arbitrary bytes: errors are fine, panics and huge allocations are not.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for info in rft_msgs::registry::all() {
        let _ = info.cdr_to_json(data);
    }
    let _ = rft_msgs::rmw_zenoh::Attachment::decode(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = rft_msgs::rmw_zenoh::parse_token(s);
        let _ = rft_msgs::rmw_zenoh::parse_data_key(s);
    }
});
