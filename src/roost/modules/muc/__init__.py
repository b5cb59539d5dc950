"""Multi-User Chat (XEP-0045 and the extensions clients use with it).

* ``model.py`` – roles, affiliations, room configuration, service policy (pure values)
* ``forms.py`` – the data forms of MUC (configuration, room info, voice requests, registration)
* ``room.py`` – the room engine: pure, stanzas and time in, stanzas and state changes out
* ``service.py`` – the room directory, creation policy and disco of the service (pure)
* ``module.py`` – the Module that runs the service on its own domain and delivers what it returns
"""
