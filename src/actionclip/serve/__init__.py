"""``actionclip serve``: command.py (its options; imports FastAPI only when run), app.py (the FastAPI app),
uploads.py (streamed multipart uploads), batching.py (decoding pool, cross-request batches, text features LRU),
static/ (the page) and labels/ (Kinetics-400, UCF-101 and HMDB-51 class names)."""
