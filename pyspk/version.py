"""pyspk's version, in a module of its own: a module that records it (the model bundle) need not import the
package's entry points, which import that module in turn."""

__version__ = "0.1.0"
