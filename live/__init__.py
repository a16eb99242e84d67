"""The living collection: a published collection as its dataset's change log changes it.

One rule for what changes do (merge), one way to embed added image files (embed), the images
added through the API (items), the collection a job trains on (collection), what a job publishes
(publish) and the index a served version searches (index). It stands on state/ (the change log)
and trainer/ (data, images, encoder, FAISS index); service/ and worker/ use it.
"""
