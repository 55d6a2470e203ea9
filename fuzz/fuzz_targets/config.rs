//! The mosquitto.conf parser: any text parses or fails with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // include_dir reads the file system: not what this target is about.
    if text.contains("include_dir") {
        return;
    }
    let _ = shardmq::Config::parse_str(&text, std::path::Path::new("fuzz.conf"));
});
