"""DecSelfMask (Decoder Self-learning by Masking) as an Axolotl plugin."""

__version__ = "0.1.0"


def __getattr__(name):
    # The plugin imports Axolotl; keep `import axolotl_decselfmask` light for the rest.
    if name == "DecSelfMaskPlugin":
        from .plugin import DecSelfMaskPlugin

        return DecSelfMaskPlugin
    raise AttributeError(name)


__all__ = ["DecSelfMaskPlugin", "__version__"]
