//! Host → app matching and SNI certificate lookup on arbitrary names.
//! Matching ignores ASCII case, as DNS does.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use router::{AppSpec, RouteTable};

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        RouteTable::builder()
            .app(
                AppSpec::new("demo")
                    .domain("www.example.com")
                    .domain("*.example.com"),
            )
            .app(AppSpec::new("api").domain("api.example.com"))
            .build()
            .expect("table")
    })
}

fuzz_target!(|data: &[u8]| {
    router::fuzzing::host(data);
    if let Ok(name) = std::str::from_utf8(data) {
        let lower = table().lookup(name).map(|a| a.name.clone());
        let upper = table()
            .lookup(&name.to_ascii_uppercase())
            .map(|a| a.name.clone());
        assert_eq!(lower, upper, "host matching depends on case");
    }
});
