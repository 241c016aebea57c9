from voicehive_orchestrator.main import main

main()
