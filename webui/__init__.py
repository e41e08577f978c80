"""The Chainlit adapter: everything app.py's hooks need, one job per module.

    context.py   AppContext: the config, the assistant, sign-in and paths, built once
    offline.py   the offline index.html patch and the per-data_dir session files folder
    render.py    pure formatters of events (markdown strings; no Chainlit, unit-tested)
    answer.py    one question's events drawn as Chainlit messages, steps and elements
    settings.py  chat profiles and the settings panel (choices from rag.config's Literals)
    history.py   the SQLite data layer and the element files of stored threads
    signin.py    the password check behind Chainlit's sign-in form
    routes.py    the playground page and stream, stored element files, route ordering
    uploads.py   files attached to a message, added to the corpus
    commands.py  slash commands: /stats, /compare
    housekeeping.py  every 5 s: closed chats' messages and cancelled timers out of memory

`rag/` knows no UI (ruff's banned-api rule); this package may import chainlit.
"""
