//! Fixed regular expressions, compiled once per instance and shared (not
//! cloned: a cloned regex starts a cache of its own). A pattern used for
//! every header field or script line would otherwise be compiled again each
//! time — in wasm that dominated a call.

use regex_lite::{Regex, RegexBuilder};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

type Cache = HashMap<(&'static str, bool), Option<Rc<Regex>>>;

thread_local! {
    static COMPILED: RefCell<Cache> = RefCell::new(HashMap::new());
}

/// `pattern` compiled (case-insensitive when asked); None if it does not
/// compile (a bug in our own pattern, reported by the caller).
pub fn fixed(pattern: &'static str, case_insensitive: bool) -> Option<Rc<Regex>> {
    COMPILED.with(|cache| {
        let mut cache = cache.borrow_mut();
        cache
            .entry((pattern, case_insensitive))
            .or_insert_with(|| {
                RegexBuilder::new(pattern)
                    .case_insensitive(case_insensitive)
                    .build()
                    .ok()
                    .map(Rc::new)
            })
            .clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_compile_once_and_match() {
        let a = fixed(r"^\d+$", false).unwrap();
        assert!(a.is_match("123") && !a.is_match("12a"));
        assert!(fixed(r"^abc$", true).unwrap().is_match("ABC"));
        assert!(fixed(r"(", false).is_none());
        COMPILED.with(|c| assert_eq!(c.borrow().len(), 3));
        fixed(r"^\d+$", false).unwrap();
        COMPILED.with(|c| assert_eq!(c.borrow().len(), 3));
    }
}
