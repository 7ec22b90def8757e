//! Pod commands: status, list, cat-manifest, stop, rm, gc, enter.

use crate::cli::Globals;

macro_rules! stub {
    ($args:ident, $f:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, clap::Args)]
        pub struct $args {
            /// Arguments.
            #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
            pub rest: Vec<String>,
        }
        #[doc = $doc]
        pub fn $f(_g: &Globals, _a: $args) -> anyhow::Result<i32> {
            anyhow::bail!("not implemented yet")
        }
    };
}
stub!(StatusArgs, status, "`rkt status`.");
stub!(ListArgs, list, "`rkt list`.");
stub!(CatManifestArgs, cat_manifest, "`rkt cat-manifest`.");
stub!(StopArgs, stop, "`rkt stop`.");
stub!(RmArgs, rm, "`rkt rm`.");
stub!(GcArgs, gc, "`rkt gc`.");
stub!(EnterArgs, enter, "`rkt enter`.");
