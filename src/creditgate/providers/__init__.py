"""Upstream providers: one module per wire protocol, all behind `base.Provider`."""
