"""The model room, on the orchestration side: a run's training data, model and index as
artifacts, the decisions on them and the aliases that serve them.

- :mod:`~shelfguard.model.training`: the training set's export and the training and
  evaluation configs, the model registered from a run's result;
- :mod:`~shelfguard.model.index`: the embedding configs and the index registered from them;
- :mod:`~shelfguard.model.objects`: the content-addressed artifact store;
- :mod:`~shelfguard.model.approval`: the human decisions on a candidate;
- :mod:`~shelfguard.model.promotion`: moving the champion alias (and rolling it back);
- :mod:`~shelfguard.model.canary`: the canary alias a run's pair serves under;
- :mod:`~shelfguard.model.online`: the online comparison of the canary and the champion.

(The training itself runs in ``shelfguard_train``, a different package.) Nothing is
imported here; import from the modules.
"""
