//! Mosquitto psk_files: any text parses or fails with an error naming a line, never a
//! panic; every identity that parsed has a key of at most MAX_KEY_LEN bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::internals::auth::psk::{PskFile, MAX_KEY_LEN};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(file) = PskFile::parse(&text, std::path::Path::new("fuzz")) else {
        return;
    };
    for line in text.lines() {
        if let Some((identity, _)) = line.split_once(':') {
            if let Some(key) = file.key(identity.trim().as_bytes()) {
                assert!(!key.is_empty() && key.len() <= MAX_KEY_LEN);
            }
        }
    }
});
