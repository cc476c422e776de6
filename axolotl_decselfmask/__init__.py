"""DecSelfMask (Decoder Self-learning by Masking) as an Axolotl plugin."""

from axolotl_decselfmask.version import __version__


def __getattr__(name):
    # The plugin imports Axolotl; keep `import axolotl_decselfmask` light for the rest.
    if name == "DecSelfMaskPlugin":
        from axolotl_decselfmask.plugin import DecSelfMaskPlugin

        return DecSelfMaskPlugin
    raise AttributeError(name)


__all__ = ["DecSelfMaskPlugin", "__version__"]
