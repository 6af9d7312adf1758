"""actionclip: video action recognition as video-text matching with CLIP."""
from actionclip.prompts import ACTIONCLIP_TEMPLATES, clean_class_name

__version__ = "0.1.0"
