//! crlfile contents (PEM or DER bytes): parsing never panics, and whatever parses is a
//! non-empty list of CRLs that webpki accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(crls) = shardmq::internals::auth::crl::parse(data) {
        assert!(!crls.is_empty());
    }
});
