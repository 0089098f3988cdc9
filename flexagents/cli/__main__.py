from flexagents.cli.app import main

main()
