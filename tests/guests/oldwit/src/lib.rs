//! A plugin built against operator:subject@0.9.0, which this host does not speak.

wit_bindgen::generate!({ world: "subject", path: "wit" });

struct Future;

impl exports::operator::subject::plugin::Guest for Future {
    fn metadata() -> String {
        "from the future".into()
    }
}

export!(Future);
