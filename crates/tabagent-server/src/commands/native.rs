//! `tabagent native [install|uninstall]`.

use crate::cli::NativeAction;
use crate::config::Config;
use crate::native::install::{self, Browser};

pub async fn run(
    config: Config,
    action: Option<NativeAction>,
    origin: Option<String>,
) -> anyhow::Result<()> {
    match action {
        None => crate::native::run(config, origin).await,
        Some(NativeAction::Install {
            extension_ids,
            browsers,
        }) => {
            for path in install::install(chosen(&browsers), &extension_ids)? {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Some(NativeAction::Uninstall { browsers }) => {
            let removed = install::uninstall(chosen(&browsers))?;
            if removed.is_empty() {
                println!("no host manifest was installed");
            }
            for path in removed {
                println!("removed {}", path.display());
            }
            Ok(())
        }
    }
}

fn chosen(browsers: &[Browser]) -> &[Browser] {
    if browsers.is_empty() {
        &Browser::ALL
    } else {
        browsers
    }
}
