"""shelfguard: data-governance workflow orchestration for e-commerce product search."""

__all__ = ["__version__"]
__version__ = "0.1.0"
