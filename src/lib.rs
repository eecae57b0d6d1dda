//! filament
