"""Ingress dialects: wire format <-> canonical only, all behind `base.Dialect`."""
