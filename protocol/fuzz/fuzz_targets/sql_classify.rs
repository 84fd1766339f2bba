//! The routing classifier on arbitrary bytes in both dialects, with and without configured
//! write functions. It must never panic, and a statement it cannot prove to be a read must not
//! go to a replica unless a replica hint asked for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidepool_protocol::sql::{self, Dialect, Route, StatementKind, WriteFunctions};

fuzz_target!(|data: &[u8]| {
    let extra = WriteFunctions::new(["audit_log", "my_counter"]);
    for dialect in [Dialect::Postgres, Dialect::MySql] {
        for functions in [&WriteFunctions::none(), &extra] {
            let c = sql::classify(data, dialect, functions);
            if c.route == Route::Replica && c.hint != Some(Route::Replica) {
                assert!(
                    matches!(c.kind, StatementKind::Read | StatementKind::Begin { read_only: true }),
                    "{:?} routed to a replica: {c:?}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }
});
