//! Contract 0.4.0 (`wit/since_v0.4.0`), the newest: the host imports are implemented for
//! these types in `runtime::imports`, and older versions forward to them.

use crate::model;

wasmtime::component::bindgen!({
    world: "subject",
    path: "../wit/since_v0.4.0",
    imports: { default: async },
    exports: { default: async },
});

pub use self::operator::subject::types as wit;

super::convert::common_conversions!();

super::convert::settings_conversions!();
