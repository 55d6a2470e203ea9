//! ACL and password files: any text parses or fails with an error; a parsed ACL answers
//! every question without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardmq::internals::auth::{acl, Acl, PasswordFile};
use shardmq::internals::codec::ByteStr;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = std::path::Path::new("fuzz");
    let _ = PasswordFile::parse(&text, path);
    let Ok(parsed) = Acl::parse(&text, path) else { return };
    for line in text.lines().take(8) {
        let user = line.split(' ').next().filter(|u| !u.is_empty());
        let mut client = parsed.client(user, line);
        let topic = ByteStr::from(line);
        let _ = client.may_read(&topic);
        let _ = client.may_write(&topic);
        let _ = client.may_subscribe(line);
        let _ = client.check(line, acl::READ | acl::WRITE);
    }
});
