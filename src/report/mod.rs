//! Reports: JSON written atomically ([`write_json`], [`print_json`], [`json_differences`]), PNG
//! plots ([`line_plot`], [`bar_plot`], [`heat_map`]) and the [`Provenance`] every report carries.

mod json;
mod plot;
mod provenance;

pub use json::{json_differences, print_json, write_json};
pub use plot::{bar_plot, heat_map, line_plot, BarSeries};
pub use provenance::Provenance;
