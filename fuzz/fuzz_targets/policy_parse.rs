//! Any bytes as a policy file: parsing and validation must answer with a
//! policy or a `file:line:column` error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vzhost::policy::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::parse("fuzz.yaml", text) {
        Ok(p) => {
            // What was accepted must be usable: rule names, hooks, limits.
            let _ = p.rule_names();
            let _ = p.lsm_hooks();
            let _ = p.fill_limits(&Default::default());
            for r in &p.files.deny {
                let _ = r.access_bits();
            }
        }
        Err(e) => {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(e.to_string().starts_with("fuzz.yaml:"), "{e}");
        }
    }
});
