"""Models logged before the package's current layout pickle `pipeline.serving.ZhangCNN`: this name
keeps them loadable. New models log `pipeline.tracking.pyfunc.ZhangCNN`, the same class."""

from pipeline.tracking.pyfunc import ZhangCNN

__all__ = ["ZhangCNN"]
